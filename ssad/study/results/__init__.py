"""Study results: the leaderboard of trials, statistics, ablation tables and printed reports."""
