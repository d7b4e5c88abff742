"""MNIST as the pipeline uses it: where it comes from and how it is checked (sources), how its pixels
become the model's input and back (dequantize), and the image geometry every layer shares (geometry).

Uses only the core modules (errors, params, files); every other layer may use it.
"""
