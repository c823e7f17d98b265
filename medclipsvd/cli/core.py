"""`medclipsvd backbones` and `medclipsvd summary`."""
from __future__ import annotations

import json
from typing import Optional

import typer

from medclipsvd.cli import options as opt


def backbones(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object per backbone."),
    open_clip: bool = typer.Option(False, "--open-clip", help="Also list open_clip's architecture names, each "
                                   "usable as --backbone NAME, or why it is not supported."),
    all_families: bool = typer.Option(False, "--all", help="List the model families instead: supported or refused, "
                                      "and why (with the open_clip architectures of each)."),
) -> None:
    """List the registered backbones (name, family, default weights).

    The list includes your own JSON files from MEDCLIPSVD_BACKBONE_DIR. Any supported open_clip architecture name
    (ViT-B-32, ViT-L-14, ViT-B-16-SigLIP, ...), hf-hub:ORG/REPO or local-dir:DIR of an open_clip-format model or of a
    transformers CLIPModel / SiglipModel also works as --backbone (docs/backbones.md)."""
    if all_families:
        _families(json_out)
        return
    from medclipsvd.backbones import get_spec, list_backbones

    rows = []
    for name in list_backbones():
        spec = get_spec(name)
        rows.append({"name": name, "family": spec.family,
                     "weights": spec.pretrained.source if spec.pretrained else "random (seeded), no download",
                     "description": spec.description})
    if open_clip:
        from medclipsvd.backbones.openclip_arch import (family_of, list_openclip_architectures,
                                                        openclip_model_cfg, unsupported_reason)

        for name in list_openclip_architectures():
            cfg = openclip_model_cfg(name)
            reason = unsupported_reason(cfg)
            rows.append({"name": name, "family": "unsupported" if reason else family_of(cfg),
                         "weights": "open_clip tag, hf-hub:, local-dir: or file (--weights); --random-init",
                         "description": f"not supported: {reason}" if reason else "open_clip architecture"})
    if json_out:
        _json_lines(rows)
        return
    from rich.markup import escape

    _two_columns("medclipsvd backbones (use with --backbone NAME)", "name", "family · default weights · description",
                 [(row["name"], f"[bold]{row['family']}[/] · {escape(row['weights'])}\n"
                                f"[dim]{escape(row['description'])}[/]") for row in rows])


def _json_lines(rows: list[dict]) -> None:
    for row in rows:
        typer.echo(json.dumps(row))


def _two_columns(title: str, left: str, right: str, cells: list[tuple[str, str]]) -> None:
    """Two columns so that the table stays readable in an 80-column terminal: the details fold under the name."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=True)
    table.add_column(left, no_wrap=True)
    table.add_column(right, overflow="fold")
    for a, b in cells:
        table.add_row(a, b)
    Console().print(table)


def _families(json_out: bool) -> None:
    """`backbones --all`: every family, supported or refused, why, and open_clip's architectures in it."""
    from medclipsvd.backbones.families import FAMILIES
    from medclipsvd.backbones.openclip_arch import classify, list_openclip_architectures, openclip_model_cfg

    archs: dict[str, list[str]] = {}
    for name in list_openclip_architectures():
        archs.setdefault(classify(openclip_model_cfg(name))[0], []).append(name)
    rows = [{"family": f.name, "status": "supported" if f.supported else "refused", "what": f.what,
             "examples": f.examples, "why": f.why, "open_clip_architectures": archs.get(f.name, [])}
            for f in sorted(FAMILIES, key=lambda f: not f.supported)]
    if json_out:
        _json_lines(rows)
        return
    from rich.markup import escape

    cells = []
    for row in rows:
        colour = "green" if row["status"] == "supported" else "red"
        n = len(row["open_clip_architectures"])
        count = f" ({n} open_clip architecture{'s' if n != 1 else ''})" if n else ""
        cells.append((f"{row['family']}\n[{colour}]{row['status']}[/]",
                      f"{escape(row['what'])}\n[bold]e.g.[/] {escape(row['examples'])}{count}\n"
                      f"[dim]{'σ targets' if row['status'] == 'supported' else 'why'}: {escape(row['why'])}[/]"))
    _two_columns("model families (supported ones work with --backbone)", "family", "what · examples · why", cells)


def summary(
    backbone: str = typer.Option(..., "--backbone", "-b", help="Registered backbone name (see `medclipsvd backbones`), "
                                 "an open_clip architecture (ViT-B-32, ViT-L-14, ...), hf-hub:ORG/REPO or local-dir:DIR."),
    random_init: bool = typer.Option(False, "--random-init", help="Full architecture with random (seeded) weights; no download."),
    weights: Optional[str] = opt.weights(),
    text_dir: Optional[str] = opt.text_dir(),
    preset: str = typer.Option("paper", "--preset", help="Target preset: paper, attention, mlp, vision-only, text-only."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Parameters per tower and trainable σ; logit check at init.

    Builds the backbone, runs 2 random images against 4 prompts, adapts it with the preset, runs them again
    and reports the largest logit difference (the adapted model must equal the original at initialisation).

    Example:

      medclipsvd summary --backbone tiny-biomedclip"""
    from medclipsvd.summary import summarize

    result = summarize(backbone, random_init=random_init, weights=weights, text_dir=text_dir, preset=preset)
    if json_out:
        typer.echo(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['backbone']} — preset {result['preset']}")
    for col in ("tower", "parameters", "trainable σ", "%"):
        table.add_column(col, justify="right")
    for tower in ("vision", "text"):
        t = result["towers"][tower]
        table.add_row(tower, f"{t['params']:,}", f"{t['trainable']:,}", f"{100 * t['trainable'] / t['params']:.4f}")
    table.add_row("total", f"{result['total_params']:,}", f"{result['trainable_params']:,}",
                  f"{result['trainable_percent']:.4f}")
    console = Console()
    console.print(table)
    console.print(f"family: {result['family']}; logit scale {result['logit_scale']:.4g}, logit bias "
                  f"{result['logit_bias']:.4g}")
    console.print(f"adapted matrices: {result['adapted_matrices']}; max |Δlogit| at init: "
                  f"{result['max_abs_logit_diff']:.3g} (relative {result['max_rel_logit_diff']:.3g}); "
                  f"SVD cache hits/misses: {result['svd_cache_hits']}/{result['svd_cache_misses']}")


def register(app: typer.Typer) -> None:
    app.command("backbones")(backbones)
    app.command("summary")(summary)
