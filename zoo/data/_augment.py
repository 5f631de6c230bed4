"""Random augmentations of image batches, in JAX so that they run inside the train step
with the step's own key (reproducible, and resumed runs see the same flips)."""

import jax
import jax.lax as lax
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


def random_translate(
    images: Float[Array, "batch height width"], key: PRNGKeyArray, max_shift: int = 2
) -> Float[Array, "batch height width"]:
    """Shift each image by up to `max_shift` pixels along each axis, filling with zeros (the
    padded random crop of the CIFAR ResNets, for images whose background is 0).

    **Arguments:**

    - `images`: a batch of single-channel images, width last.
    - `key`: a PRNG key; one shift per image and axis is drawn, uniform in
      `[-max_shift, max_shift]`.
    - `max_shift`: the largest shift in pixels, `>= 0`.

    **Returns:** the batch, each image moved by its own shift.

    **Raises:** `ValueError` for a negative or non-integer `max_shift`.
    """
    if not isinstance(max_shift, int) or isinstance(max_shift, bool) or max_shift < 0:
        raise ValueError(f"random_translate: `max_shift` must be an int >= 0, got {max_shift!r}")
    if max_shift == 0:
        return images
    _, h, w = images.shape
    padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    corners = jr.randint(key, (images.shape[0], 2), 0, 2 * max_shift + 1)

    def crop(image, corner):
        return lax.dynamic_slice(image, (corner[0], corner[1]), (h, w))

    return jax.vmap(crop)(padded, corners)
