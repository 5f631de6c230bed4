"""zoo.data.random_flip and random_translate, and augmentation inside the classification loss."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import jaxtyping
import numpy as np
import pytest

import zoo
import zoo.data
import zoo.train


def test_random_flip_mirrors_about_half(getkey):
    images = jr.uniform(getkey(), (2000, 4, 5))
    key = getkey()
    out = np.asarray(zoo.data.random_flip(images, key))
    same = np.all(out == np.asarray(images), axis=(1, 2))
    mirrored = np.all(out == np.asarray(images)[:, :, ::-1], axis=(1, 2))
    assert np.all(same ^ mirrored)  # each image exactly one of the two
    assert 0.45 < mirrored.mean() < 0.55
    np.testing.assert_array_equal(out, zoo.data.random_flip(images, key))  # same key, same flips


def test_random_flip_wants_single_channel_images(getkey):
    with pytest.raises(jaxtyping.TypeCheckError, match="images"):
        zoo.data.random_flip(jnp.zeros((2, 1, 4, 5)), getkey())


def _shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`image` moved down by `dy` and right by `dx` pixels, zeros shifted in (NumPy)."""
    h, w = image.shape
    out = np.zeros_like(image)
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_random_translate_shifts_each_image_within_the_bound(getkey):
    images = jr.uniform(getkey(), (300, 6, 7), minval=0.5, maxval=1.0)  # no zero pixels
    key = getkey()
    out = np.asarray(zoo.data.random_translate(images, key, max_shift=2))
    assert out.shape == images.shape
    seen = set()
    for image, moved in zip(np.asarray(images), out):
        shifts = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if np.array_equal(_shifted(image, dy, dx), moved)
        ]
        assert len(shifts) == 1, "each output must be its input moved by one shift"
        seen.add(shifts[0])
    assert len(seen) == 25  # every shift in [-2, 2]^2 occurs in 300 draws
    np.testing.assert_array_equal(out, zoo.data.random_translate(images, key, max_shift=2))
    np.testing.assert_array_equal(zoo.data.random_translate(images, key, 0), images)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_random_translate_refuses_a_bad_shift(getkey, bad):
    # A float is a TypeError where the runtime type checks are on (the tests' default).
    with pytest.raises((ValueError, TypeError), match="max_shift"):
        zoo.data.random_translate(jnp.zeros((2, 4, 5)), getkey(), bad)


def test_classification_loss_augments_training_batches(getkey):
    model = zoo.MLP(in_size=12, num_classes=3, width=8, depth=1, key=getkey())
    batch = {"image": jr.normal(getkey(), (6, 3, 4)), "label": jnp.arange(6) % 3}
    flatten = lambda x: x.reshape(x.shape[0], -1)  # noqa: E731
    seen = []

    def mirror(x, key):
        seen.append(key)
        return x[:, :, ::-1]

    augmented = zoo.train.classification_loss(prepare=flatten, augment=mirror)
    plain = zoo.train.classification_loss(prepare=flatten)
    key = getkey()
    loss, _ = augmented(model, zoo.train.empty_state(), batch, key)
    mirrored = {**batch, "image": batch["image"][:, :, ::-1]}
    np.testing.assert_allclose(
        loss, plain(model, zoo.train.empty_state(), mirrored, key)[0], rtol=1e-6
    )
    assert not np.allclose(loss, plain(model, zoo.train.empty_state(), batch, key)[0])
    assert len(seen) == 1 and eqx.is_array(seen[0])
