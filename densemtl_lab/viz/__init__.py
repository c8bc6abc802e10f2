"""Visual tools: colourisers for every task (figures and explorers build on them)."""

from densemtl_lab.viz.colour import COLOURISERS, ColouriseError, colourise, default_palette

__all__ = ["COLOURISERS", "ColouriseError", "colourise", "default_palette"]
