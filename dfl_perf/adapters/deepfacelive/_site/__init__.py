"""Holds the sitecustomize.py that the DeepFaceLive launcher puts on PYTHONPATH (a package only so it ships)."""
