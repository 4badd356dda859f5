"""The LightningDataModule over design-bench tasks."""

from lightning_mbo.data.datamodule import MBODataModule, MemberBatches

__all__ = ["MBODataModule", "MemberBatches"]
