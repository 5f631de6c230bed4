"""zoo.data.random_flip, and augmentation inside the classification loss."""

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
    loss, _ = augmented(model, None, batch, key)
    mirrored = {**batch, "image": batch["image"][:, :, ::-1]}
    np.testing.assert_allclose(loss, plain(model, None, mirrored, key)[0], rtol=1e-6)
    assert not np.allclose(loss, plain(model, None, batch, key)[0])
    assert len(seen) == 1 and eqx.is_array(seen[0])
