"""Fine-tuning: classification and dialogue SFT on the one training engine; LoRA; predict, chat, tune."""
