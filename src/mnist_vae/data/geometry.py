"""MNIST's image geometry: SIDE x SIDE grey images, seen by the models as rows of PIXELS values."""

SIDE = 28
PIXELS = SIDE * SIDE
