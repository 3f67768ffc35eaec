"""Offline evaluation: ranking metrics, the time and live protocols, tuning."""
