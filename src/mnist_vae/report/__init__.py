"""What a person looks at: the figures and the latent explorer page.

Uses scoring, vae, data and the core modules; independent of api.
"""
