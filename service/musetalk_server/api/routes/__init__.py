"""Route modules: thin handlers over the render entry and the avatar store."""
