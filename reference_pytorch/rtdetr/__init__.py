"""RT-DETR zoo: decoder, encoder, denoising, criterion, matcher, post-processor."""
