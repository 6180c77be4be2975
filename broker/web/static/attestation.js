// Attestation page: shows the "Imprimer" button, which opens the browser's print dialog.
const button = document.getElementById('imprimer');
if (button) {
  button.hidden = false;
  button.addEventListener('click', () => window.print());
}
