"""The thin trio layer: the only code that awaits. Every deadline is a cancel scope here."""
