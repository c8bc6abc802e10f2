"""Datasets that return the data contract (docs/real_datasets.md): the toy scenes and the real-data loaders."""

from densemtl_lab.data.toy import ToyScenes
from densemtl_lab.data.toy_scene import TOY_CLASS_IDS
from densemtl_lab.data.cityscapes import Cityscapes
from densemtl_lab.data.nyuv2 import NYUv2
from densemtl_lab.data.prepare import PreparedDataset
from densemtl_lab.data.real_common import DatasetError
from densemtl_lab.data.synthia import Synthia
from densemtl_lab.data.transforms import Compose, RandomCrop, RandomHorizontalFlip, Resize
from densemtl_lab.data.vkitti2 import VirtualKitti2
