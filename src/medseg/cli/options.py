"""Choices shared by several commands (Typer turns each Enum into a validated option)."""

from __future__ import annotations

from enum import Enum


class OnErrorOpt(str, Enum):
    stop = "stop"
    skip = "skip"


class RoutingOpt(str, Enum):
    image = "image"
    batch = "batch"
    auto = "auto"


class MaskModeOpt(str, Enum):
    strict = "strict"
    nonzero = "nonzero"
    labels = "labels"


class MissingOpt(str, Enum):
    error = "error"
    empty = "empty"
    skip = "skip"


class NsdModeOpt(str, Enum):
    boundary = "boundary"
    subpixel = "subpixel"
    cvpr24 = "cvpr24"


class Target(str, Enum):
    npz = "npz"
    folder = "folder"


class Protocol(str, Enum):
    stratified = "stratified"
    cmmc = "cmmc"


class EngineOpt(str, Enum):
    """:data:`medseg.inference.engines.ENGINES`."""

    auto = "auto"
    optimized = "optimized"
    eager = "eager"
    compile = "compile"
    onnx = "onnx"
    onnx_int8 = "onnx-int8"
