"""Training state: AdamW param groups, gradient clipping, EMA (LR schedule: rtdetr_common.lr_schedule)."""
