"""Framework-neutral code shared by both twins: config loading, denoising noise,
the COCO data pipeline, COCO evaluation and drawing. It imports neither torch nor
Jittor, so both twins can use it without importing each other."""
