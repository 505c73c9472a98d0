"""Export to deployment formats (ONNX + ONNX Runtime)."""

from medseg.export.onnx import OnnxExport, OnnxPredictor, export_module, export_onnx

__all__ = ["OnnxExport", "OnnxPredictor", "export_module", "export_onnx"]
