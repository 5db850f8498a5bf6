"""captioner package."""
