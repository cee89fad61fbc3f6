"""avfusion: reproduction and benchmarking suite for DeepAVFusion (Mo & Morgado, CVPR 2024)."""
__version__ = "0.1.0"
