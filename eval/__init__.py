"""Evaluation as the DiT paper did it: ADM's FID, sFID, Inception Score, Precision and Recall, in PyTorch.

The pipeline, one module per step:
    eval.images      ADM-layout .npz (arr_0 uint8 N x H x W x C), arrays, folders -> uint8 batches
    eval.features    registry of feature extractors (inception, mnist) -> Features(pool, spatial, logits)
    eval.extract     batches -> features on the device (prefetching, torchrun sharding)
    eval.metrics     features -> FID, sFID, IS, precision/recall (ADM's arithmetic)
    eval.reference   reference statistics in ADM's .npz layout
    eval.evaluate    evaluate_samples(samples.npz, ref.npz) -> the results-table metrics
"""
