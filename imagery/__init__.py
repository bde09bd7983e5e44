"""Sentinel-2 (Landslide4Sense) patch segmentation with the RAU-Net family."""
