"""Serving: deployable artifacts and their one card, prediction, upload checks, Grad-CAM."""
