"""Random augmentations of image batches, in JAX so that they run inside the train step
with the step's own key (reproducible, and resumed runs see the same flips)."""

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray


def random_flip(
    images: Float[Array, "batch height width"], key: PRNGKeyArray
) -> Float[Array, "batch height width"]:
    """Mirror each image left-right with probability 1/2.

    A label-preserving augmentation for datasets such as Fashion-MNIST (a mirrored shoe is
    still a shoe); not for digits, where a mirrored 2 is no 2.

    **Arguments:**

    - `images`: a batch of single-channel images, width last.
    - `key`: a PRNG key; one coin is drawn per image.

    **Returns:** the batch, with about half of the images mirrored.
    """
    flip = jr.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None], images[:, :, ::-1], images)
