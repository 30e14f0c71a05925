"""Faces: landmarks, crop boxes, masks and paste-back."""
