"""The torch side of training: the architectures' table (torch-free), the modules it names,
and training on data that works offline.

Only ``models`` and ``export`` import torch; everything downstream runs on the exported files.
"""
