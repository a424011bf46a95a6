"""Small helpers shared by every part: example inputs, atomic writes, cloning, progress, hashes, versions.

May import: errors only.
"""
