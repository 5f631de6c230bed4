"""Converting PyTorch weights (torchvision's ResNets, timm's ViTs) to zoo models and back,
by an explicit table of names: never by the order the tensors happen to be stored in.

Every torch tensor name is paired with the path of the zoo array(s) it fills and the shape it
must have; BatchNorm running statistics go into the `eqx.nn.State`. A state dict with a
missing, unexpected or mis-shaped tensor is refused with all of them named.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from ..models import ResNet, VisionTransformer, get_model_spec
from ._errors import WeightsError

# torch's running statistics are plain averages, not Equinox's zero-debiased sums: a batch
# counter this large makes `momentum**counter` underflow to 0, so zoo's inference divides
# them by 1, and leaves room for ~1e9 further training steps before the int32 counter
# overflows. Conversion stores `IMPORTED_COUNTER + num_batches_tracked`; export subtracts it.
IMPORTED_COUNTER = 2**30


class ConversionError(WeightsError):
    """A state dict does not fit the model: tensors missing, unexpected or mis-shaped."""


@dataclasses.dataclass(frozen=True)
class _Param:
    """The torch tensor `name` fills the zoo arrays at `paths` (dotted attribute paths,
    integers indexing tuples): one array, reshaped from `torch_shape` when given (the same
    elements in the same order), or several, split along torch's first axis (timm's fused
    `qkv`)."""

    name: str
    paths: tuple[str, ...]
    torch_shape: tuple[int, ...] | None = None


@dataclasses.dataclass(frozen=True)
class _Norm:
    """The running statistics of the torch BatchNorm `prefix` (`running_mean`,
    `running_var`, `num_batches_tracked`) are the state of the `eqx.nn.BatchNorm` at `path`;
    its `weight` and `bias` are `_Param`s."""

    prefix: str
    path: str


def _get(tree: Any, path: str) -> Any:
    for part in path.split("."):
        tree = tree[int(part)] if part.isdigit() else getattr(tree, part)
    return tree


def _conv(name: str, path: str) -> list[_Param]:
    return [_Param(f"{name}.weight", (f"{path}.weight",))]


def _linear(name: str, path: str) -> list[_Param]:
    return [
        _Param(f"{name}.weight", (f"{path}.weight",)),
        _Param(f"{name}.bias", (f"{path}.bias",)),
    ]


def _layer_norm(name: str, path: str) -> list[_Param]:
    return _linear(name, path)  # the same two names: `weight` and `bias`, same shapes


def _batch_norm(name: str, path: str) -> list[_Param | _Norm]:
    # `weight` and `bias` (as a Linear's), then the statistics: torch's order.
    return [*_linear(name, path), _Norm(name, path)]


def _resnet_table(model: ResNet) -> list[_Param | _Norm]:
    """torchvision's `torchvision.models.resnet.ResNet` names, in its order."""
    table: list[_Param | _Norm] = [*_conv("conv1", "stem_conv"), *_batch_norm("bn1", "stem_norm")]
    for s, stage in enumerate(model.stages):
        for b, block in enumerate(stage):
            tv, zoo = f"layer{s + 1}.{b}", f"stages.{s}.{b}"
            convs = ("conv1", "conv2", "conv3") if hasattr(block, "conv3") else ("conv1", "conv2")
            for i, conv in enumerate(convs, start=1):
                table += _conv(f"{tv}.{conv}", f"{zoo}.{conv}")
                table += _batch_norm(f"{tv}.bn{i}", f"{zoo}.bn{i}")
            if block.downsample_conv is not None:
                table += _conv(f"{tv}.downsample.0", f"{zoo}.downsample_conv")
                table += _batch_norm(f"{tv}.downsample.1", f"{zoo}.downsample_norm")
    table += _linear("fc", "head")
    return table


def _vit_table(model: VisionTransformer) -> list[_Param | _Norm]:
    """timm's `timm.models.vision_transformer.VisionTransformer` names (class token, no
    register tokens, no layer scale, `global_pool="token"`)."""
    dim = model.num_features
    patch = model.patch_embed.weight.shape[0]
    params = [
        _Param("cls_token", ("cls_token",), (1, 1, dim)),
        _Param("pos_embed", ("pos_embed",), (1, *model.pos_embed.shape)),
        _Param("patch_embed.proj.weight", ("patch_embed.weight",)),
        _Param("patch_embed.proj.bias", ("patch_embed.bias",), (patch,)),
    ]
    for i in range(len(model.blocks)):
        t, z = f"blocks.{i}", f"blocks.{i}"
        params += _layer_norm(f"{t}.norm1", f"{z}.norm1")
        qkv = tuple(f"{z}.attn.{p}_proj" for p in ("query", "key", "value"))
        params += [
            _Param(f"{t}.attn.qkv.weight", tuple(f"{p}.weight" for p in qkv)),
            _Param(f"{t}.attn.qkv.bias", tuple(f"{p}.bias" for p in qkv)),
        ]
        params += _linear(f"{t}.attn.proj", f"{z}.attn.output_proj")
        params += _layer_norm(f"{t}.norm2", f"{z}.norm2")
        params += _linear(f"{t}.mlp.fc1", f"{z}.fc1")
        params += _linear(f"{t}.mlp.fc2", f"{z}.fc2")
    params += _layer_norm("norm", "norm")
    params += _linear("head", "head")
    return list(params)


def _table(model: Any) -> list[_Param | _Norm]:
    if isinstance(model, ResNet):
        return _resnet_table(model)
    if isinstance(model, VisionTransformer):
        return _vit_table(model)
    raise TypeError(
        f"no torch name table for {type(model).__name__}: conversion supports zoo.ResNet and "
        f"zoo.VisionTransformer"
    )


def _torch_shape(model: Any, param: _Param) -> tuple[int, ...]:
    shapes = [tuple(_get(model, p).shape) for p in param.paths]
    if len(shapes) > 1:
        return (sum(s[0] for s in shapes), *shapes[0][1:])
    return shapes[0] if param.torch_shape is None else param.torch_shape


def _numpy(value: Any, name: str) -> np.ndarray:
    """A tensor of a state dict as NumPy: NumPy arrays as they are, torch tensors through
    `.numpy()` (bfloat16, which NumPy lacks, through float32)."""
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    try:
        # A copy: `.numpy()` shares the tensor's memory and `jnp.asarray` may share it too,
        # so torch updating its buffers in place would otherwise change the zoo model.
        return np.array(value, copy=True)
    except Exception as e:
        raise ConversionError(f"tensor {name!r} is not an array ({type(value).__name__}): {e}")


def _check_names(model: Any, tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """All of `tensors` as NumPy, once every expected name is there with its shape and
    nothing else is. **Raises:** `ConversionError` listing every problem."""
    expected: dict[str, tuple[tuple[int, ...], str]] = {}
    for entry in _table(model):
        if isinstance(entry, _Param):
            expected[entry.name] = (_torch_shape(model, entry), "float")
            continue
        (channels,) = _get(model, entry.path).weight.shape
        for stat in ("running_mean", "running_var"):
            expected[f"{entry.prefix}.{stat}"] = ((channels,), "float")
        expected[f"{entry.prefix}.num_batches_tracked"] = ((), "int")
    arrays = {name: _numpy(value, name) for name, value in tensors.items()}
    problems = []
    missing = [name for name in expected if name not in arrays]
    unexpected = sorted(name for name in arrays if name not in expected)
    if missing:
        problems.append(f"missing: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected: {', '.join(unexpected)}")
    for name, (shape, kind) in expected.items():
        if name not in arrays:
            continue
        a = arrays[name]
        if tuple(a.shape) != shape:
            problems.append(f"{name} has shape {tuple(a.shape)}, the model needs {shape}")
        ok = (
            np.issubdtype(a.dtype, np.floating)
            if kind == "float"
            else np.issubdtype(a.dtype, np.integer)
        )
        if not ok:
            problems.append(f"{name} has dtype {a.dtype}, the model needs a {kind} tensor")
    if problems:
        raise ConversionError(
            f"the state dict does not fit this {type(model).__name__} "
            f"({len(expected)} tensors expected): " + "; ".join(problems)
        )
    return arrays


def _check_coverage(model: Any, table: list[_Param | _Norm]) -> None:
    """Guard the table itself: every array of the model must be named exactly once."""
    named = [id(_get(model, p)) for e in table if isinstance(e, _Param) for p in e.paths]
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))
    if sorted(named) != sorted(id(x) for x in leaves) or len(set(named)) != len(named):
        raise AssertionError(
            f"zoo's torch name table for {type(model).__name__} names {len(named)} arrays; "
            f"the model holds {len(leaves)}"
        )


def convert_state_dict(
    model: Any, state: eqx.nn.State, tensors: Mapping[str, Any]
) -> tuple[Any, eqx.nn.State]:
    """Fill a zoo model with the weights of a torch state dict in torchvision/timm naming.

    **Arguments:**

    - `model`, `state`: a `zoo.ResNet` (torchvision names) or `zoo.VisionTransformer` (timm
      names) of the same architecture, e.g. freshly built; only the shapes are used.
    - `tensors`: a mapping of names to arrays: `safetensors.numpy.load_file(path)`,
      `zoo.hub.load_safetensors(path)`, or `torch.load(path, weights_only=True)`.

    **Returns:** `(model, state)` holding the converted weights (in the model's dtype) and,
    for a ResNet, the BatchNorm running statistics; the model's mode (training or
    inference) is unchanged.

    **Raises:** `ConversionError` naming every missing, unexpected or mis-shaped tensor (and
    any of the wrong kind of dtype); `TypeError` for an unsupported model.
    """
    table = _table(model)
    _check_coverage(model, table)
    arrays = _check_names(model, tensors)
    params = [e for e in table if isinstance(e, _Param)]
    paths, values = [], []
    for p in params:
        a = arrays[p.name]
        parts = np.split(a, len(p.paths), axis=0) if len(p.paths) > 1 else [a]
        for path, part in zip(p.paths, parts, strict=True):
            leaf = _get(model, path)
            paths.append(path)
            values.append(jnp.asarray(part.reshape(leaf.shape), dtype=leaf.dtype))
    model = eqx.tree_at(lambda m: [_get(m, p) for p in paths], model, values)
    for n in (e for e in table if isinstance(e, _Norm)):
        norm = _get(model, n.path)
        mean, var = state.get(norm.batch_state_index)
        stats = (
            jnp.asarray(arrays[f"{n.prefix}.running_mean"], mean.dtype),
            jnp.asarray(arrays[f"{n.prefix}.running_var"], var.dtype),
        )
        state = state.set(norm.batch_state_index, stats)
        counter = state.get(norm.batch_counter)
        tracked = int(arrays[f"{n.prefix}.num_batches_tracked"])
        # torch's statistics are plain averages; see IMPORTED_COUNTER.
        # full_like keeps the counter's weak type, which State.set compares.
        state = state.set(norm.batch_counter, lax.full_like(counter, IMPORTED_COUNTER + tracked))
    return model, state


def to_state_dict(model: Any, state: eqx.nn.State) -> dict[str, np.ndarray]:
    """The inverse of [`zoo.hub.convert_state_dict`][]: the model's weights as NumPy arrays in
    torchvision (ResNet) or timm (ViT) naming, ready for `load_state_dict`.

    BatchNorm statistics are exported as the averages the model uses in inference mode
    (Equinox's zero-debiasing undone), `num_batches_tracked` as the steps counted.

    **Returns:** a dict of names to NumPy arrays, in the table's order.
    """
    table = _table(model)
    _check_coverage(model, table)
    out: dict[str, np.ndarray] = {}
    for n in table:
        if isinstance(n, _Param):
            # Copies: views of JAX buffers are read-only, which torch.from_numpy warns about.
            parts = [np.array(_get(model, path), copy=True) for path in n.paths]
            a = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
            out[n.name] = a.reshape(_torch_shape(model, n))
            continue
        norm = _get(model, n.path)
        counter = int(state.get(norm.batch_counter))
        mean, var = (np.asarray(s) for s in state.get(norm.batch_state_index))
        debias = 1.0 if counter == 0 else 1.0 - norm.momentum**counter
        out[f"{n.prefix}.running_mean"] = (mean / debias).astype(mean.dtype)
        out[f"{n.prefix}.running_var"] = (var / debias).astype(var.dtype)
        tracked = counter - IMPORTED_COUNTER if counter >= IMPORTED_COUNTER else counter
        out[f"{n.prefix}.num_batches_tracked"] = np.asarray(tracked, np.int64)
    return out


def _infer(tensors: Mapping[str, Any], name: str, axis: int) -> int | None:
    value = tensors.get(name)
    return None if value is None else int(value.shape[axis])


def _build(arch: str, cls: type, kwargs: dict[str, Any]) -> tuple[Any, eqx.nn.State]:
    model, state = get_model_spec(arch).builder(key=jax.random.PRNGKey(0), **kwargs)
    if not isinstance(model, cls):
        raise ValueError(f"{arch!r} builds a {type(model).__name__}, not a zoo.{cls.__name__}")
    return model, state


def from_torchvision_resnet(
    tensors: Mapping[str, Any], arch: str = "resnet50", **kwargs: Any
) -> tuple[ResNet, eqx.nn.State]:
    """A `zoo.ResNet` with the weights of a torchvision ResNet state dict.

    **Arguments:**

    - `tensors`: torchvision's names to arrays (see [`zoo.hub.convert_state_dict`][]).
    - `arch`: a registered ResNet, `"resnet18"`, `"resnet34"`, `"resnet50"`, ...; `in_channels`
      and `num_classes` are read from the `conv1` and `fc` tensors.
    - `**kwargs`: further `zoo.ResNet` arguments (e.g. `dtype`).

    **Returns:** `(model, state)` in inference mode.

    **Raises:** `ConversionError` (see [`zoo.hub.convert_state_dict`][]).
    """
    kwargs.setdefault("in_channels", _infer(tensors, "conv1.weight", 1) or 3)
    if (classes := _infer(tensors, "fc.weight", 0)) is not None:
        kwargs.setdefault("num_classes", classes)
    model, state = _build(arch, ResNet, kwargs)
    model, state = convert_state_dict(model, state, tensors)
    return eqx.nn.inference_mode(model), state


def from_timm_vit(
    tensors: Mapping[str, Any], arch: str = "vit_base_patch16_224", **kwargs: Any
) -> tuple[VisionTransformer, eqx.nn.State]:
    """A `zoo.VisionTransformer` with the weights of a timm ViT state dict.

    **Arguments:**

    - `tensors`: timm's names to arrays (see [`zoo.hub.convert_state_dict`][]).
    - `arch`: a registered ViT, e.g. `"vit_small_patch16_224"`; `in_channels` and `num_classes`
      are read from the `patch_embed.proj` and `head` tensors.
    - `**kwargs`: further `zoo.VisionTransformer` arguments (e.g. `dtype`).

    **Returns:** `(model, state)` in inference mode (`state` is empty).

    **Raises:** `ConversionError` (see [`zoo.hub.convert_state_dict`][]).
    """
    kwargs.setdefault("in_channels", _infer(tensors, "patch_embed.proj.weight", 1) or 3)
    if (classes := _infer(tensors, "head.weight", 0)) is not None:
        kwargs.setdefault("num_classes", classes)
    model, state = _build(arch, VisionTransformer, kwargs)
    model, state = convert_state_dict(model, state, tensors)
    return eqx.nn.inference_mode(model), state
