"""One prediction, in order: catalog -> route -> validate -> run -> answer. No Flask."""
