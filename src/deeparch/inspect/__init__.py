"""The inspector: shapes, parameters, mult-adds, memory and receptive field, with the arithmetic."""
from .explain import Explanation, explain
from .summary import Summary, parse_input_size, summary

__all__ = ["Explanation", "Summary", "explain", "parse_input_size", "summary"]
