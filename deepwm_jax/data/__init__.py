"""Data for deepwm_jax, one idea per module.

- sources:    builtin (scikit-image) and folder images, their protect/attack/val splits, patches
- degrade:    degradations that turn clean images B into task inputs A (rain, noise, blur)
- watermarks: the watermark image (logo, text, file) and the blank target
- imageio:    reading user folders and writing results, with actionable errors
"""
