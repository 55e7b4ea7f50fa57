"""Datasets: manifests, builders, patient-level splits, leakage checks, the cache, synthetic data."""

from __future__ import annotations

from medlens.data.builders import (
    load_manifest,
    load_sample,
    manifest_from_dicom_tree,
    manifest_from_folder,
    manifest_from_medmnist,
)
from medlens.data.cache import CachedArrays, build_cache, cache_key
from medlens.data.manifest import SPLITS, Manifest
from medlens.data.splits import (
    LeakageReport,
    array_digest,
    assert_no_leakage,
    check_leakage,
    kfold,
    patient_split,
)

__all__ = [
    "SPLITS",
    "CachedArrays",
    "LeakageReport",
    "Manifest",
    "array_digest",
    "assert_no_leakage",
    "build_cache",
    "cache_key",
    "check_leakage",
    "kfold",
    "load_manifest",
    "load_sample",
    "manifest_from_dicom_tree",
    "manifest_from_folder",
    "manifest_from_medmnist",
    "patient_split",
]
