"""mkdocs hook: the pretrained-models page's table, generated from zoo's registry at build time.

A page that contains the marker `<!-- zoo:pretrained-table -->` gets, in its place, one row per
weight set that ships with zoo (`zoo.list_models(pretrained=True)`), read from its card: so the
site cannot disagree with the package.
"""

import zoo

MARKER = "<!-- zoo:pretrained-table -->"


def _metrics(metrics) -> str:
    shown = []
    for name, value in sorted(metrics.items()):
        if name.endswith("accuracy") and isinstance(value, float):
            shown.append(f"{name.replace('_', ' ')} {100 * value:.2f}%")
        elif isinstance(value, float):
            shown.append(f"{name.replace('_', ' ')} {value:.4g}")
    return "; ".join(shown) or "—"


def pretrained_table() -> str:
    rows = [
        "| weight set | dataset | metrics | parameters | size | URL pin (SHA-256 of card.json) "
        "| command that trained it |",
        "| --- | --- | --- | ---: | ---: | --- | --- |",
    ]
    for name in zoo.list_models(pretrained=True):
        card = zoo.model_card(name)
        size = f"{card.weights_size / 1024:,.0f} KiB" if card.weights_size else "—"
        params = f"{card.num_params:,}" if card.num_params else "—"
        folder = zoo.hub.bundled_weights_dir() / name
        try:  # what a URL of this folder, published as it is, would pin
            sha = f"`{zoo.hub.card_sha256(folder)}`"
        except (OSError, ValueError):
            sha = "—"
        command = f"`{card.command}`" if card.command else "—"
        rows.append(
            f"| `{name}` | {card.dataset or '—'} | {_metrics(card.metrics)} | {params} "
            f"| {size} | {sha} | {command} |"
        )
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, pretrained_table())
    return markdown
