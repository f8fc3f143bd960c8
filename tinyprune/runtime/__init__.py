"""Raspberry Pi runtime: heart rate, HRV and unsupervised rPPG, with numpy and scipy only.

Nothing in this package imports torch or TensorFlow, so it installs alone with
``pip install "tinyprune[pi]"``.
"""
