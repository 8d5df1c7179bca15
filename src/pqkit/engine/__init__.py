"""The compute engines of pqkit: the compiled core (``pqkit.engine._core``)."""
