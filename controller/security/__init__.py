"""Key handling and the signed (optionally encrypted) command channel."""
