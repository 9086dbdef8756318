"""What only Baseten's cloud needs: bundle upload to S3 with temporary credentials."""
