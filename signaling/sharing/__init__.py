"""Sharing in a call: images (photos and DICOM) shown to everyone, over HTTP."""
