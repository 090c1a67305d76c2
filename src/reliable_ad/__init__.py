"""reliable-ad: reliable e-commerce advertising image generation with human feedback.

The package follows the method of Du et al., "Towards Reliable Advertising Image Generation Using
Human Feedback" (ECCV 2024): generation, RFNet, Recurrent Generation and RFFT.
"""

__version__ = "0.1.0"
