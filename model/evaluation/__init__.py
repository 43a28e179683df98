"""Honest evaluation: free generation (no teacher forcing), gIoU / cIoU / J&F, reports and worst-case overlays."""
