"""tarry: a multi-protocol network tarpit on asyncio."""

__version__ = "0.1.0"
