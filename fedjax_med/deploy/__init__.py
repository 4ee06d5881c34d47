"""Deploying a run across sites with Flower: a ServerApp and a ClientApp around the round
primitives (README "Deploy across sites"; needs the extra: pip install -e ".[deploy]")."""
