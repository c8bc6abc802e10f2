"""Visual tools: colourisers for every task (figures and explorers build on them)."""

from densemtl_lab.viz.colour import ColouriseError, colourise, default_palette

__all__ = ["ColouriseError", "colourise", "default_palette"]
