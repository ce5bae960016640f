"""Suite-wide settings; each area keeps its own fixtures in its own conftest.py."""
