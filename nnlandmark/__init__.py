"""nnlandmark: self-configuring 3D landmark detection on nnU-Net v2."""
