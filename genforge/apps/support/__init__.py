"""The customer-service assistant (`genforge app support`): a knowledge base, support history and genforge's
stages (finetune sft/classify, serve) make an assistant that answers from the FAQ, generates grounded
answers with citations, and hands off to a person when it should not answer."""
