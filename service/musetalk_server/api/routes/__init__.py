"""Route modules: thin handlers over the pipeline and the store."""
