"""The package version, apart from the package face so that any module can name it without importing pixelwise."""
__version__ = "0.1.0"
