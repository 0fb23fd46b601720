"""``from engine.utils.data import DataLoader, TensorDataset`` as in torch.utils.data:
the map-style classes of ``engine.data.mapstyle`` (the streaming Arrow loader stays
``engine.data.DataLoader``)."""
from ..data.mapstyle import (ConcatDataset, DataLoader, Dataset, Subset, TensorDataset, default_collate,
                             random_split)

__all__ = ["Dataset", "TensorDataset", "Subset", "ConcatDataset", "DataLoader", "default_collate", "random_split"]
