"""Video turns: the clip probed once and handed on (`clip`), the SAM2 video session kept bounded (`session`, the only
module touching transformers' private SAM2 video state) and [SEG] propagation over the clip (`segmenter`)."""
