"""What organizations configure for the notifier (channels, rules, silences, mute windows, inhibit rules),
and the per-process cache of it that the pipeline reads."""
