"""Converting torchvision ResNets and timm ViTs, checked against those libraries themselves.

The comparisons need the `convert` extra (torch, torchvision, timm, safetensors), which does
not install beside the benchmarks' torch: `nox -s convert` runs them with
`ZOO_TEST_CONVERT=1`, under which a missing library fails instead of skipping. The name
table's errors, the round trips and the `.safetensors` reader and writer need none of them.
"""

import importlib
import os
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

REQUIRED = os.environ.get("ZOO_TEST_CONVERT", "") == "1"

# Measured on random initialisations (fixed seed) with the BatchNorm statistics and affine
# parameters randomised, float32 on CPU: the largest |zoo - torch| over the batch, divided by
# the largest |torch| of the same activation, was 1.3e-7 to 3.4e-6 for the ResNet-18/34/50
# stages (growing with depth), 6e-7 to 1.1e-6 for their logits, 1.0e-6 to 1.5e-6 for the
# ViT-Ti blocks and logits; the bound leaves a margin for other CPUs and XLA versions.
RELATIVE_TOLERANCE = 2e-5


def _lib(name: str):
    """The module `name`; skipped when missing unless `ZOO_TEST_CONVERT=1` (then an error)."""
    if REQUIRED:
        return importlib.import_module(name)
    return pytest.importorskip(name, reason="needs the convert extra; `nox -s convert`")


def _vmap(model):
    return jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))


def _relative_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def _tiny_resnet(key, **kwargs):
    import zoo

    config = {"layers": (1, 1), "widths": (4, 8), "stem": "small", "stem_width": 4}
    return eqx.nn.make_with_state(zoo.ResNet)(**{**config, "num_classes": 3, **kwargs}, key=key)


def _tiny_vit(key, **kwargs):
    import zoo

    config = {"image_size": 8, "patch_size": 4, "dim": 8, "depth": 2, "num_heads": 2}
    return eqx.nn.make_with_state(zoo.VisionTransformer)(
        **{**config, "num_classes": 3, **kwargs}, key=key
    )


def _train_step(model, state, x):
    """One training-mode forward pass: new BatchNorm statistics in the state."""
    _, state = _vmap(model)(x, state)
    return state


# ---------------------------------------------------------------- the name tables


def test_resnet_names_are_torchvisions(getkey):
    import zoo

    model, state = _tiny_resnet(getkey(), block="bottleneck")
    names = list(zoo.hub.to_state_dict(model, state))
    assert names[:8] == [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
        "layer1.0.conv1.weight",
        "layer1.0.bn1.weight",
    ]
    assert "layer2.0.downsample.0.weight" in names and "layer2.0.downsample.1.running_var" in names
    assert "layer1.0.conv3.weight" in names and "layer1.0.bn3.num_batches_tracked" in names
    assert names[-2:] == ["fc.weight", "fc.bias"]


def test_vit_names_are_timms(getkey):
    import zoo

    model, state = _tiny_vit(getkey())
    tensors = zoo.hub.to_state_dict(model, state)
    assert tensors["cls_token"].shape == (1, 1, 8)
    assert tensors["pos_embed"].shape == (1, 5, 8)
    assert tensors["patch_embed.proj.weight"].shape == (8, 3, 4, 4)
    assert tensors["patch_embed.proj.bias"].shape == (8,)
    # The fused qkv: query, key and value projections stacked along the output axis.
    qkv = tensors["blocks.1.attn.qkv.weight"]
    attn = model.blocks[1].attn
    assert qkv.shape == (24, 8)
    np.testing.assert_array_equal(qkv[8:16], attn.key_proj.weight)
    assert {"norm.weight", "head.bias", "blocks.0.mlp.fc2.weight"} <= set(tensors)


@pytest.mark.parametrize("family", ["resnet", "vit"])
def test_round_trip_is_bit_identical(getkey, family):
    import zoo

    if family == "resnet":
        model, state = _tiny_resnet(getkey())
        state = _train_step(model, state, jax.random.normal(getkey(), (4, 3, 8, 8)))
    else:
        model, state = _tiny_vit(getkey())
    tensors = zoo.hub.to_state_dict(model, state)
    fresh, fresh_state = (_tiny_resnet if family == "resnet" else _tiny_vit)(getkey())
    back, back_state = zoo.hub.convert_state_dict(fresh, fresh_state, tensors)
    again = zoo.hub.to_state_dict(back, back_state)
    assert list(again) == list(tensors)
    for name in tensors:
        np.testing.assert_array_equal(again[name], tensors[name], err_msg=name)
        assert again[name].dtype == tensors[name].dtype, name
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(model), strict=True):
        np.testing.assert_array_equal(a, b)
    # Inference gives the same outputs, though the state now holds plain averages.
    x = jax.random.normal(getkey(), (2, 3, 8, 8))
    if family == "resnet":
        y, _ = _vmap(eqx.nn.inference_mode(model))(x, state)
        y2, _ = _vmap(eqx.nn.inference_mode(back))(x, back_state)
    else:  # stateless
        y, y2 = jax.vmap(model)(x), jax.vmap(back)(x)  # pyright: ignore[reportCallIssue]
    np.testing.assert_allclose(y2, y, rtol=1e-5, atol=1e-6)


def test_every_problem_is_named(getkey):
    import zoo

    model, state = _tiny_resnet(getkey())
    good = zoo.hub.to_state_dict(model, state)
    bad = dict(good)
    del bad["layer2.0.downsample.1.running_mean"]
    del bad["fc.bias"]
    bad["layer3.0.conv1.weight"] = np.zeros((8, 8, 3, 3), np.float32)
    bad["layer1.0.conv2.weight"] = np.zeros((4, 4, 1, 3), np.float32)
    bad["bn1.weight"] = np.ones(4, np.int32)
    with pytest.raises(zoo.hub.ConversionError) as info:
        zoo.hub.convert_state_dict(model, state, bad)
    message = str(info.value)
    for expected in (
        "missing: layer2.0.downsample.1.running_mean, fc.bias",
        "unexpected: layer3.0.conv1.weight",
        "layer1.0.conv2.weight has shape (4, 4, 1, 3), the model needs (4, 4, 3, 3)",
        "bn1.weight has dtype int32",
    ):
        assert expected in message
    # The model's own mis-shape: a checkpoint of another width.
    other, other_state = _tiny_resnet(getkey(), widths=(4, 16))
    with pytest.raises(zoo.hub.ConversionError, match=r"layer2\.0\.conv1\.weight has shape"):
        zoo.hub.convert_state_dict(model, state, zoo.hub.to_state_dict(other, other_state))
    with pytest.raises(TypeError, match="conversion supports zoo.ResNet"):
        zoo.hub.to_state_dict(zoo.MLP(key=getkey()), eqx.nn.State({}))


def test_from_helpers_read_classes_and_channels(getkey):
    import zoo

    model, state = zoo.create_model("resnet20", in_channels=1, num_classes=7, key=getkey())
    back, _ = zoo.hub.from_torchvision_resnet(zoo.hub.to_state_dict(model, state), "resnet20")
    assert back.in_channels == 1 and back.num_classes == 7 and back.stem_norm.inference
    vit, vit_state = _tiny_vit(getkey(), num_classes=5)
    with pytest.raises(ValueError, match="builds a VisionTransformer, not a zoo.ResNet"):
        zoo.hub.from_torchvision_resnet(zoo.hub.to_state_dict(vit, vit_state), "vit_patch4_28")


# ---------------------------------------------------------------- .safetensors


def test_safetensors_round_trip_and_atomic_write(tmp_path: Path):
    import zoo

    rng = np.random.default_rng(0)
    tensors = {
        "b.f32": rng.normal(size=(3, 4)).astype(np.float32),
        "a.f16": rng.normal(size=(5,)).astype(np.float16),
        "c.bf16": rng.normal(size=(2, 2)).astype(ml_dtypes.bfloat16),
        "d.i64": np.asarray(12345678901, np.int64),
        "e.empty": np.zeros((0, 3), np.float32),
        "f.u8": np.arange(7, dtype=np.uint8),
    }
    path = zoo.hub.save_safetensors(tensors, tmp_path / "t.safetensors", metadata={"k": "v"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]  # no temporaries
    back = zoo.hub.load_safetensors(path)
    assert sorted(back) == sorted(tensors)
    for name, a in tensors.items():
        assert back[name].dtype == a.dtype and back[name].shape == a.shape, name
        np.testing.assert_array_equal(back[name], a)
    with pytest.raises(TypeError, match="'x' has unsupported dtype complex64"):
        zoo.hub.save_safetensors({"x": np.zeros(2, np.complex64)}, tmp_path / "c.safetensors")


def test_safetensors_refuses_malformed_files(tmp_path: Path):
    import zoo

    path = zoo.hub.save_safetensors({"w": np.ones((4, 4), np.float32)}, tmp_path / "w.safetensors")
    data = path.read_bytes()
    cases = {
        "short": (data[:5], "shorter than"),
        "truncated": (data[:-4], "lies outside the data"),
        "padded": (data + b"\0" * 4, "4 bytes after the last tensor"),
        "header": (data[:8] + b"{" * (len(data) - 8), "header is not JSON"),
        "length": ((10**9).to_bytes(8, "little") + data[8:], "header length"),
    }
    for name, (content, message) in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(content)
        with pytest.raises(zoo.hub.WeightsError, match=message):
            zoo.hub.load_safetensors(bad)


def test_export_safetensors_round_trips(getkey, tmp_path: Path):
    import zoo

    model, state = _tiny_resnet(getkey())
    state = _train_step(model, state, jax.random.normal(getkey(), (4, 3, 8, 8)))
    path = zoo.hub.export_safetensors(model, state, tmp_path / "r.safetensors")
    tensors = zoo.hub.load_safetensors(path)
    expected = zoo.hub.to_state_dict(model, state)
    assert sorted(tensors) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(tensors[name], expected[name])


# ---------------------------------------------------------------- against torchvision and timm


def _randomise_batch_norms(torch, module) -> None:
    """Statistics and affine parameters away from their initial 0/1, so that a mix-up of
    mean and variance, or of weight and bias, shows in the outputs."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(torch.rand(n, generator=gen) - 0.5)
                m.num_batches_tracked.fill_(7)


def _torchvision_stages(tm, x):
    h = tm.maxpool(tm.relu(tm.bn1(tm.conv1(x))))
    out = [h]
    for layer in (tm.layer1, tm.layer2, tm.layer3, tm.layer4):
        h = layer(h)
        out.append(h)
    return out


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_resnet_matches_torchvision(arch):
    torch, torchvision = _lib("torch"), _lib("torchvision")
    import zoo

    torch.manual_seed(0)
    tm = getattr(torchvision.models, arch)(weights=None).eval()
    _randomise_batch_norms(torch, tm)
    model, state = zoo.hub.from_torchvision_resnet(tm.state_dict(), arch)
    assert list(zoo.hub.to_state_dict(model, state)) == list(tm.state_dict())  # and its order
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        stages = _torchvision_stages(tm, x)
        logits = tm(x)
    xj = jnp.asarray(x.numpy())
    maps, _ = jax.jit(_vmap(model.forward_intermediates))(xj, state)
    y, _ = jax.jit(_vmap(model))(xj, state)
    errors = [_relative_error(m, s.numpy()) for m, s in zip(maps, stages, strict=True)]
    errors.append(_relative_error(y, logits.numpy()))
    print(f"{arch}: relative errors (stem, stages 1-4, logits): {errors}")
    assert max(errors) < RELATIVE_TOLERANCE


def test_resnet_training_step_matches_torch():
    """Training mode: outputs from the batch statistics, and the running statistics torch
    keeps (unbiased variance, momentum 0.1) after one step."""
    torch, torchvision = _lib("torch"), _lib("torchvision")
    import zoo

    torch.manual_seed(0)
    tm = torchvision.models.resnet18(weights=None, num_classes=5)
    _randomise_batch_norms(torch, tm)
    model, state = zoo.hub.from_torchvision_resnet(tm.state_dict(), "resnet18")
    model = eqx.nn.inference_mode(model, False)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    tm.train()
    with torch.no_grad():
        logits = tm(x)
    y, state = jax.jit(_vmap(model))(jnp.asarray(x.numpy()), state)
    assert _relative_error(y, logits.numpy()) < RELATIVE_TOLERANCE
    after = zoo.hub.to_state_dict(model, state)
    for name, want in tm.state_dict().items():
        if "running" in name:
            assert _relative_error(after[name], want.numpy()) < RELATIVE_TOLERANCE, name
        elif name.endswith("num_batches_tracked"):
            assert int(after[name]) == int(want) == 8, name
    # And inference with the new statistics agrees too.
    tm.eval()
    with torch.no_grad():
        logits = tm(x)
    y, _ = jax.jit(_vmap(eqx.nn.inference_mode(model)))(jnp.asarray(x.numpy()), state)
    assert _relative_error(y, logits.numpy()) < RELATIVE_TOLERANCE


def test_vit_matches_timm():
    torch, timm = _lib("torch"), _lib("timm")
    import zoo

    torch.manual_seed(0)
    tm = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    with torch.no_grad():  # timm starts the class token at ~1e-6 and biases at 0: perturb
        for p in tm.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model, state = zoo.hub.from_timm_vit(tm.state_dict(), "vit_tiny_patch16_224")
    assert list(zoo.hub.to_state_dict(model, state)) == list(tm.state_dict())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        h = tm.norm_pre(tm.patch_drop(tm._pos_embed(tm.patch_embed(x))))
        blocks = [h]
        for block in tm.blocks:
            h = block(h)
            blocks.append(h)
        logits = tm(x)
    xj = jnp.asarray(x.numpy())
    tokens = jax.jit(jax.vmap(model.forward_intermediates))(xj)
    y = jax.jit(jax.vmap(model))(xj)
    errors = [_relative_error(t, b.numpy()) for t, b in zip(tokens, blocks, strict=True)]
    errors.append(_relative_error(y, logits.numpy()))
    print(f"vit_tiny_patch16_224: relative errors (embedding, blocks 1-12, logits): {errors}")
    assert max(errors) < RELATIVE_TOLERANCE


def test_safetensors_interoperate_with_the_reference(getkey, tmp_path: Path):
    """zoo's files load with `safetensors` and into torch; the library's load with zoo."""
    torch, torchvision = _lib("torch"), _lib("torchvision")
    st_numpy, st_torch = _lib("safetensors.numpy"), _lib("safetensors.torch")
    import zoo

    model, state = zoo.create_model("resnet18", num_classes=4, key=getkey())
    state = _train_step(model, state, jax.random.normal(getkey(), (2, 3, 32, 32)))
    path = zoo.hub.export_safetensors(model, state, tmp_path / "r18.safetensors")
    expected = zoo.hub.to_state_dict(model, state)
    theirs = st_numpy.load_file(str(path))
    assert sorted(theirs) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(theirs[name], expected[name])
    tm = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    tm.load_state_dict(st_torch.load_file(str(path)), strict=True)
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
    y, _ = _vmap(eqx.nn.inference_mode(model))(jnp.asarray(x), state)
    assert _relative_error(y, want) < RELATIVE_TOLERANCE
    # The other way: a file written by the reference library, read by zoo.
    ref = tmp_path / "ref.safetensors"
    st_torch.save_file(tm.state_dict(), str(ref))
    ours = zoo.hub.load_safetensors(ref)
    for name, t in tm.state_dict().items():
        np.testing.assert_array_equal(ours[name], t.numpy())


def test_pth_files_load_with_weights_only(getkey, tmp_path: Path):
    torch, timm = _lib("torch"), _lib("timm")
    import zoo

    torch.manual_seed(0)
    tm = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=16, depth=2
    ).eval()
    torch.save(tm.state_dict(), tmp_path / "vit.pth")
    tensors = torch.load(tmp_path / "vit.pth", weights_only=True)
    model, _ = zoo.hub.from_timm_vit(tensors, "vit_tiny_patch16_224", image_size=32, depth=2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = tm(x).numpy()
    assert _relative_error(jax.vmap(model)(jnp.asarray(x.numpy())), want) < RELATIVE_TOLERANCE


# ---------------------------------------------------------------- remote torch weights


@pytest.fixture
def zoo_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    return tmp_path / "home"


def _served_resnet(key, tmp_path: Path):
    """A small ResNet-20 exported in torchvision naming: its bytes and SHA-256."""
    import hashlib

    import zoo

    model, state = zoo.create_model("resnet20", in_channels=1, num_classes=4, key=key)
    state = _train_step(model, state, jax.random.normal(key, (4, 1, 12, 12)))
    path = zoo.hub.export_safetensors(model, state, tmp_path / "served.safetensors")
    data = path.read_bytes()
    return model, state, data, hashlib.sha256(data).hexdigest()


def _resnet20_source(url: str, sha256: str, **fields):
    """A `zoo.hub.TorchSource` of a torchvision-named ResNet-20 file at `url`."""
    import zoo

    return zoo.hub.TorchSource(
        arch="resnet20", url=url, sha256=sha256, family="torchvision_resnet", **fields
    )


def test_remote_torch_weights_convert_once_and_load_by_name(getkey, tmp_path, zoo_home):
    from _idx_server import IdxServer

    import zoo

    model, state, data, sha = _served_resnet(getkey(), tmp_path)
    with IdxServer({"/tv/r20.safetensors": ("ok", data)}) as server:
        source = _resnet20_source(
            server.url("/tv/") + "r20.safetensors",
            sha,
            license="test",
            preprocess={"input_size": [1, 12, 12]},
        )
        folder = zoo.hub.fetch_torch_weights("resnet20.tv_test", source=source)
        assert folder == zoo_home / "weights" / "resnet20.tv_test"
        assert server.hits == ["/tv/r20.safetensors"]
        again = zoo.hub.fetch_torch_weights("resnet20.tv_test", source=source)
        assert again == folder and len(server.hits) == 1  # converted once, cached
    # No download left behind, and the folder is a zoo weights folder found by name.
    assert [p.name for p in (zoo_home / "downloads").iterdir()] == []
    card = zoo.model_card("resnet20.tv_test")
    assert card.recipe_config["source_sha256"] == sha
    assert card.recipe_config["conversion_tolerance"].startswith("max abs error")
    loaded, loaded_state = zoo.create_model("resnet20.tv_test", pretrained=True)
    x = jax.random.normal(getkey(), (2, 1, 12, 12))
    want, _ = _vmap(eqx.nn.inference_mode(model))(x, state)
    got, _ = _vmap(loaded)(x, loaded_state)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_create_model_fetches_a_torch_source_by_name(getkey, tmp_path, zoo_home, monkeypatch):
    """A registry entry naming a remote torch file: the first `create_model(...,
    pretrained=True)` downloads, verifies and converts it; later ones load the cached
    conversion without a request."""
    from _idx_server import IdxServer

    import zoo
    import zoo.hub._torch_sources as torch_sources

    model, state, data, sha = _served_resnet(getkey(), tmp_path)
    with IdxServer({"/tv/r20.safetensors": ("ok", data)}) as server:
        source = _resnet20_source(server.url("/tv/") + "r20.safetensors", sha, license="test")
        monkeypatch.setitem(torch_sources.TORCH_SOURCES, "resnet20.tv_test", source)
        x = jax.random.normal(getkey(), (2, 1, 12, 12))
        want, _ = _vmap(eqx.nn.inference_mode(model))(x, state)
        for _ in range(2):
            loaded, loaded_state = zoo.create_model("resnet20.tv_test", pretrained=True)
            got, _ = _vmap(loaded)(x, loaded_state)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert server.hits == ["/tv/r20.safetensors"]  # converted once
    # An unknown tag is still the error that lists what exists.
    with pytest.raises(zoo.hub.WeightsNotFoundError, match="resnet20.tv_none"):
        zoo.create_model("resnet20.tv_none", pretrained=True)


@pytest.mark.parametrize("failure", ["checksum", "truncate", "404", "offline"])
def test_remote_torch_weights_bad_downloads_cache_nothing(
    getkey, tmp_path, zoo_home, monkeypatch, failure
):
    from _idx_server import IdxServer, Mode

    import zoo

    _, _, data, sha = _served_resnet(getkey(), tmp_path)
    modes: dict[str, Mode] = {"truncate": "truncate", "404": "404"}
    mode: Mode = modes.get(failure, "ok")
    pinned = "0" * 64 if failure == "checksum" else sha
    if failure == "offline":
        monkeypatch.setenv("ZOO_OFFLINE", "1")
    errors = {
        "checksum": (zoo.hub.ChecksumMismatchError, "but its source pins 0000"),
        "truncate": (zoo.hub.TruncatedWeightsError, "stopped after"),
        "404": (zoo.hub.DownloadError, "HTTP 404"),
        "offline": (zoo.hub.OfflineError, "ZOO_OFFLINE is set"),
    }
    error, message = errors[failure]
    with IdxServer({"/w.safetensors": (mode, data)}) as server:
        source = _resnet20_source(server.url("/") + "w.safetensors", pinned)
        with pytest.raises(error, match=message):
            zoo.hub.fetch_torch_weights("resnet20.bad", source=source)
        assert server.hits == ([] if failure == "offline" else ["/w.safetensors"])
    assert not (zoo_home / "weights" / "resnet20.bad").exists()
    downloads = zoo_home / "downloads"
    assert not downloads.exists() or list(downloads.iterdir()) == []


def test_torch_source_table_and_arguments():
    import zoo

    assert "resnet50.tv_in1k" in zoo.hub.torch_sources()
    with pytest.raises(zoo.hub.UnknownModelError, match="no torch source named 'resnet50.x'"):
        zoo.hub.fetch_torch_weights("resnet50.x")
    with pytest.raises(ValueError, match="64 lowercase hex"):
        zoo.hub.TorchSource(arch="resnet50", url="https://h/x.pth", sha256="abc", family="timm_vit")


def test_remote_pth_is_read_with_torch(getkey, tmp_path, zoo_home):
    torch = _lib("torch")
    import hashlib

    from _idx_server import IdxServer

    import zoo

    model, state, _, _ = _served_resnet(getkey(), tmp_path)
    tensors = {k: torch.from_numpy(v) for k, v in zoo.hub.to_state_dict(model, state).items()}
    torch.save(tensors, tmp_path / "r20.pth")
    data = (tmp_path / "r20.pth").read_bytes()
    with IdxServer({"/r20.pth": ("ok", data)}) as server:
        source = _resnet20_source(server.url("/") + "r20.pth", hashlib.sha256(data).hexdigest())
        zoo.hub.fetch_torch_weights("resnet20.pth_test", source=source)
    loaded, loaded_state = zoo.create_model("resnet20.pth_test", pretrained=True)
    x = jax.random.normal(getkey(), (2, 1, 12, 12))
    want, _ = _vmap(eqx.nn.inference_mode(model))(x, state)
    np.testing.assert_allclose(_vmap(loaded)(x, loaded_state)[0], want, rtol=1e-5, atol=1e-6)
