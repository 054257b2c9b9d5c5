"""The DRx webhook contract: its payload models, its signature check, its translation to facts."""
