"""Import-only stand-in for SimpleITK on the lent GPU machine (its 53 MB wheel does not fit the transfer).

nnU-Net imports SimpleITK at module level; the GPU check reads and writes NIfTI through nnU-Net's NibabelIO
and never calls SimpleITK. Any real use fails loudly here instead of silently doing something else.
"""


def __getattr__(name):
    raise ImportError(f"SimpleITK.{name}: SimpleITK is not installed on this machine (GPU check import shim)")
